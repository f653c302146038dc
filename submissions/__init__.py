"""Reference submissions (NAdamW, AdamW, SGD-Nesterov) and the code they share (`common`)."""
