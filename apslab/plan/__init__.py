"""Capacity planning: the SLO search over GPU counts (:mod:`~apslab.plan.search`), grid sweeps on
any executor (:mod:`~apslab.plan.sweep`), the notebook-06 study and its widget
(:mod:`~apslab.plan.study`), HTML reports (:mod:`~apslab.plan.report`) and their commands
(:mod:`~apslab.plan.commands`). Imports core, io and sim; from the lab only
:mod:`apslab.lab.appkit`.
"""
