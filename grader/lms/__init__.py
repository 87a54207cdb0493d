"""Entry points for grading inside an LMS's container (Gradescope, PrairieLearn), and the bundle
an instructor uploads to one.

Each LMS runs one submission per disposable container, as root, often without namespaces:
the container is the outer wall, and inside it the kernel runs as an unprivileged user
(sandbox mode "user") that cannot read the grader's tree. The modules here find the
student's notebook, close the LMS's tree to other users, grade through
`grader.grading.pipeline.grade_safely`, and write the LMS's results file (translated by
`grader.reports.gradescope` / `grader.reports.prairielearn`) beside the grader's own
result.json and feedback.html.

    submission.py    the one notebook in an upload, or why there is none
    grading.py       what both LMSs do: close the tree, grade, keep the grader's own outputs
    gradescope.py    `grader gradescope run`: /autograder in, results/results.json out
    prairielearn.py  `grader prairielearn`: /grade in, /grade/results/results.json out
    bundle.py        `grader gradescope build`: the autograder zip (setup.sh, run_autograder, ...)
"""
