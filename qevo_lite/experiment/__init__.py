"""Layer 7, experiment: profiles, the task interface, one context, one cell runner, one grid runner with
resume, summaries and tables. Tasks (layer 7, :mod:`qevo_lite.tasks`) plug in through
:class:`~qevo_lite.experiment.task.Task`."""
