"""Peers for bench/serving.py: setup.sh makes their venvs; harness.py runs them; benchmodels.py is
the model code every system runs; one server script per peer."""
