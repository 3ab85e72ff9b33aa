"""The control plane's services: what the API and the controllers ask of the stores, beyond HTTP.

Routes (:mod:`aicloud.server.routes`) read the request, check the caller and call a service;
services read and write the metadata and blob stores, and give the controllers their launch
hooks. A service never imports a route.

* :mod:`.names`: names, ids and version numbers from a request (path tricks refused).
* :mod:`.specs`: a submitted job's spec validated and resolved, one validator per job kind.
* :mod:`.jobs`: :class:`~.jobs.JobLauncher`, the job controller's launch and wrap-up.
* :mod:`.sweeps`: :class:`~.sweeps.SweepLauncher` (the sweep controller, the best model) and the trials table.
* :mod:`.replicas`: :class:`~.replicas.ReplicaLauncher`, what a serving replica process gets.
* :mod:`.datasets`: uploads profiled into dataset versions, splits.
* :mod:`.models`: model references (``name:3``, ``name@alias``) and a new version's lineage.
* :mod:`.secrets`: secret values sealed with the master key, bound to workspace and name.
* :mod:`.usage`: usage reports (jobs that ended in a time range, priced and grouped).
"""
