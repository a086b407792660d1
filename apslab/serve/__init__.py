"""The live service: the scheduler behind FastAPI (:mod:`~apslab.serve.service`, the static
engine and the app), the continuous engine in real time (:mod:`~apslab.serve.continuous`), the
OpenAI-compatible API (:mod:`~apslab.serve.openai_api`), API keys (:mod:`~apslab.serve.keys`),
what they share (:mod:`~apslab.serve.common`), the commands (:mod:`~apslab.serve.commands`), the
load generator (:mod:`~apslab.serve.load`) and notebook 07's helpers (:mod:`~apslab.serve.widgets`).
Imports core, io and sim; from the lab only :mod:`apslab.lab.appkit`.
"""
