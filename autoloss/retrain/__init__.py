"""Retraining: each loss trained properly, over seeds, and scored on the test split against a
reference (the proof of a searched loss).

    experiment  the retraining setup (Experiment) from flags and a flat YAML file
    runs        one training run of one loss and seed (resumable), its scores
    compare     every loss x seed of an experiment, the tables and figures of the comparison
"""

from autoloss.retrain.compare import CompareResult, compare_losses
from autoloss.retrain.experiment import Experiment, experiment_from_dict, read_experiment
from autoloss.retrain.runs import evaluate_checkpoint, train_run

__all__ = ["CompareResult", "Experiment", "compare_losses", "evaluate_checkpoint",
           "experiment_from_dict", "read_experiment", "train_run"]
