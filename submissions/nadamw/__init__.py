"""Reference submission: nadamw."""
