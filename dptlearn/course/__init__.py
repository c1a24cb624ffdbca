"""The course around the head: exercise checks, the exercise generator and the grader.

    checks/     one check per exercise, split by topic, over one shared harness
    probe.py    the kernel side of a check: runs the learner's code on given inputs (no reference inside)
    exercises.py  solutions/ -> exercises/ (stubs), one source for both
    grading/    dptlearn-grade: sandboxed runs, trusted verdicts, reports
"""
