"""Activation stage: from segments to actions. The maths (lift.py, policy.py, offpolicy.py, groups.py) imports
no Dagster; assets.py wires it to the warehouse and is what the code location registers."""
