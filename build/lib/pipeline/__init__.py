"""The library: tasks, configuration, the ranked-group schema and store, generation.

It never imports Prefect or ``trainers``; flows orchestrate it and notebooks can use it.
"""
