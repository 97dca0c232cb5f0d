"""GI-tract organs on abdominal MR (UW-Madison GI tract, paper 001)."""
