"""Reference submission: adamw."""
