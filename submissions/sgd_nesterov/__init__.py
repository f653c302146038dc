"""Reference submission: sgd_nesterov."""
