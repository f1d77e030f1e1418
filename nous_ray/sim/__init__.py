"""Stand-in workers with a cost model: rehearse a run's timing without its hardware.

- :mod:`~nous_ray.sim.specs`: public GPU and model specifications;
- :mod:`~nous_ray.sim.cost`: how long each operation takes, memory per GPU (``sim.*`` keys);
- :mod:`~nous_ray.sim.workload`: response lengths, pass rates, stand-in problems;
- :mod:`~nous_ray.sim.engine`: a continuous-batching engine simulated between events;
- :mod:`~nous_ray.sim.workers`: pools implementing the driver's protocols, in one process;
- :mod:`~nous_ray.sim.clock`: the virtual-clock event loop and the compressed clock of Ray actors;
- :mod:`~nous_ray.sim.host`: one machine's cores shared by every role (the CPU default);
- :mod:`~nous_ray.sim.planner`: the real driver on the stand-ins, a report per role (``launch/plan.py``).

The Ray-actor versions of the stand-ins live in ``actors/sim.py``.
"""
