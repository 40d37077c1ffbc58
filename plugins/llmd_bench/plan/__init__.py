"""What a run will do and cost before it runs: the method description (method.py) and the estimate from stored history
(plan_estimate.py)."""
