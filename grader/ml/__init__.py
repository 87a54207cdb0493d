"""The machine-learning side of grading: one module per job.

    datasets.py     datasets under the data root (MNIST, Fashion-MNIST, California housing), downloads
                    only when asked
    task.py         what a model assignment asks for, and its data (TaskData)
    budget.py       the training budget: the spec's default and caps, the rules for a student's TRAINING
    graph.py        the model as the child described it (pure, validated)
    rebuild.py      the model rebuilt from that description with standard torch only
    analysis.py     what running the rebuild shows: input shape, output kind, mismatches
    description.py  ModelDescription: what the checks read about a model
    training.py     the grader's side of a training run (the job, its checks)
    trainer.py      the trusted training process (`python -m grader.ml.trainer`)
    metrics.py      accuracy, MSE, and the plot data for feedback
    baselines.py    scikit-learn baselines, cached
    toy.py          toy tasks on points of the plane, drawn by the grader (toy-2d)
    state_file.py   reading a model file the student's kernel saved, in a trusted process

Nothing here reads the student's kernel or gives points: the checks (grader.checks) ask the kernel
and score what these modules compute. A student's model is built once, in the sandbox, and described as data; the
grader rebuilds it, inspects the rebuild, trains it in a process that never
ran student code, and scores it in its own process against labels the child
never sees.
"""
