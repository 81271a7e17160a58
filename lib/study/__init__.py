"""Study tooling: the test matrix, sweeps, the comparison report, Slurm."""
