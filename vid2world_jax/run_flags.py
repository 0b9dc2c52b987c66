"""The ``--config`` / ``--workdir`` flags shared by the trainer's command lines (train, the demo's ablations and
pretrained export), defined only when a command line asks for them (never at import); parse them with
``user_input.parse_flags`` (one-line errors)."""

from __future__ import annotations

from absl import flags


def define_config_and_workdir(*, lock_config: bool = True):
  """Defines ``--config`` (a configs/*.py file) and ``--workdir``; returns their flag holders."""
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  config = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).",
                                           lock_config=lock_config)
  workdir = flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard logs and samples go here.")
  return config, workdir
