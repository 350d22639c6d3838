"""The env faces over one batched dynamics: MergeSim (B rows), HTMEnv (B = 1), HTMVectorEnv
(B = N), and their pictures."""
