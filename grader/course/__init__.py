"""The one door for course authors: everything an assignment's spec (solutions/<name>.py) may use.

A spec imports from here and nowhere else in the grader, so that the grader's own modules can move
without breaking a course's files (tests/test_course_door.py fails when a spec reaches past it).

    from grader.course import Assignment, Check, Limits, ModelRule, ModelScore, ...

- the assignment and its checks: Assignment, Check, Outcome, CheckContext (what a check function gets:
  `call`, and `call_many` with CallSpec for several calls in one round trip, read with value_of),
  StudentError (what a check raises when the student's code gave no value) with its StudentErrorKind,
  Limits (the sandbox's);
- checks written as data, which also run on a student's machine (`grader check`): Probed with Plan and
  CallSpec, ModelRule, ModelScore, ValueRule, and the budgets a student may choose, TrainingDict and
  LearningRate, within Budget and BudgetCaps;
- models: the recipes (ImageClassification, TabularRegression, Toy2D), ModelTask and FEATURE_STYLES;
- helpers: numeric comparisons (as_array, compare_array, compare_gradients, NotNumeric), the judges a
  spec may reuse (network_params, relu_network, pick_lowest, polynomial_fit), and, for a model saved to
  a file, the requests to the kernel (SaveModel, LoadModel) and the grader's reading of the file
  (read_saved_file, SavedFile, NO_FILE).
"""

from grader.checks.catalog import LearningRate, ModelRule, ModelScore, Plan, Probed, TrainingDict, ValueRule
from grader.checks.context import CallSpec, CheckContext, value_of
from grader.checks.judges import network_params, pick_lowest, polynomial_fit, relu_network
from grader.checks.numeric import NotNumeric, as_array, compare_array, compare_gradients
from grader.checks.recipes import ImageClassification, TabularRegression, Toy2D
from grader.child.protocol import LoadModel, SaveModel
from grader.course.assignment import Assignment, Check
from grader.errors import StudentError
from grader.ml.budget import Budget, BudgetCaps
from grader.ml.state_file import NO_FILE, SavedFile, read_saved_file
from grader.ml.task import FEATURE_STYLES, ModelTask
from grader.sandbox.limits import Limits
from grader.scoring import Outcome
from grader.states import StudentErrorKind

__all__ = [
    "Assignment", "Check", "Outcome", "CheckContext", "CallSpec", "value_of", "StudentError", "StudentErrorKind",
    "Limits",
    "Probed", "Plan", "ModelRule", "ModelScore", "ValueRule", "TrainingDict", "LearningRate",
    "Budget", "BudgetCaps",
    "ImageClassification", "TabularRegression", "Toy2D", "ModelTask", "FEATURE_STYLES",
    "as_array", "compare_array", "compare_gradients", "NotNumeric",
    "network_params", "relu_network", "pick_lowest", "polynomial_fit",
    "SaveModel", "LoadModel", "read_saved_file", "SavedFile", "NO_FILE",
]
