"""The checks: what a spec's check functions are built from, and the only grading stage that asks the
student's kernel for values (through a CheckContext).

    context.py   CheckContext: a check's view of the student's kernel (values, calls, training)
    numeric.py   small pure comparisons: values in, `Outcome` out
    judges.py    judges a spec may reuse (network parameters, ReLU networks, polynomial fits)
    catalog.py   checks written as data (Probed, ModelRule, ValueRule...), which also run in `grader check`
    models.py    the scoring rules for a trained model (accuracy, MSE against baselines)
    recipes.py   the model recipes a spec builds on: ImageClassification, TabularRegression, Toy2D
    budget.py    the training budget a notebook asks for, read through the context
"""
