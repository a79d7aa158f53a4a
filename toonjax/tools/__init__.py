"""Command-line tools that are not training: benchmarks (more arrive with later issues)."""
