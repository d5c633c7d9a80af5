"""Training: the compiled step, the eager controller around it, and what it writes."""
