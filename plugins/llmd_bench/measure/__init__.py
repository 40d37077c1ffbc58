"""Measurement: the sweep core, GuideLLM reports (levels, layouts, reading, stall watch), observation (observe/),
adaptive sweeps, level resets, noise, GPU time, the cell folder, the served proof and local processes."""
