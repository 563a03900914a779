"""Scenario sweeps: a design of points over dotted scenario parameters, run by an executor,
stored point by point so a killed sweep resumes exactly."""
