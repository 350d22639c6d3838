"""Generation (report 3.8): root densities, the parts sampler, classifier-guided unmerging,
and the validity, coverage and novelty of what they generate."""
