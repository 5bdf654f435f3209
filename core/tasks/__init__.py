"""Tasks: the system models everything is judged by (precoding now; detection and OFDM reception later)."""
