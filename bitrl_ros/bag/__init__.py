"""rosbag2 recording, reading, replay sources and foreign-bag mapping (ROS-free, built on `rosbags`)."""
