"""The crash-state explorer (``make crash-states``; a sample in ``tests/trialfile/test_crash_states.py``).

In the manner of ALICE ("All File Systems Are Not Created Equal", OSDI 2014) and CrashMonkey: record what
a workload does to the files of a results folder (``trace``: every byte, from its system calls), generate
every state a crash can leave at every point under stated persistence models (``model``), run the next
owner's recovery on each and judge the outcome against the states the pipeline promises (``check``),
for the workloads of ``workloads``; ``explore`` puts it together and reports.
"""
