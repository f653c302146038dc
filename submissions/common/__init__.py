"""Code shared by the reference submissions: schedule, optimizers, batch sizes, train steps."""
