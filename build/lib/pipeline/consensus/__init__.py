"""Merging every source's judgments of a group into one consensus ranking, and finding where
sources contradict themselves (cycles) or each other (Kendall tau). Vectorised over groups:
tensors of shape [G, ...] for all groups of a chunk at once, no Python loop per pair."""
