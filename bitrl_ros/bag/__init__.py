"""rosbag2 recording, reading, replay sources and foreign-bag mapping (ROS-free, built on `rosbags`).

Modules, each importing only those above it: records (record dataclasses, topic_matches, stamp_ns), typestore,
reader (Bag, open_bag, records of one bitrl topic), foreign (foreign bags through a YAML mapping), sources
(iter_observations / read_observations: a bitrl bag or a mapped foreign one), recorder (BagRecorder, reindex);
for `bitrl eval-bag`: estimators (PDIS, WPDIS, bootstrap CI: pure maths), episodes (a bag's decisions in one
pass), policy (EvaluatedPolicy and the features it takes), ope (evaluate_bag and its report).
"""
