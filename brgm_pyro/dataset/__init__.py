"""Whole data sets: a folder reconstructed by one process or a torchrun job, resumable, with a report.

    run           ``reconstruct_dataset``: the images of a folder shared among the processes
    distributed   the processes of one run (a torch.distributed group under torchrun)
    manifest      the run's record on disk, one line per image and attempt
    report        the static HTML report of a run
"""
