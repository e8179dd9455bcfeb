"""Dispatch: turns pending studies into Ray Tune runs and their results into SQL rows.

``Dispatcher`` (in the serve process) claims pending studies and starts one
``study_runner`` process per study; the runner drives one Ray Tune run whose
``StoreCallback`` writes every trial and report to the store as it happens.
"""
