"""The live service: the scheduler behind FastAPI (:mod:`~apslab.serve.service`), its command
(:mod:`~apslab.serve.commands`), its load generator (:mod:`~apslab.serve.load`) and the
notebook-07 figures and widget (:mod:`~apslab.serve.widgets`). Imports core, io and sim; from the
lab only :mod:`apslab.lab.appkit`.
"""
