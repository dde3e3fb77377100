"""Environment families, each with the same interface: make the env, its goal set, label a frame's goals, render."""
