"""Reference submission: nadamw_self_tuning."""
