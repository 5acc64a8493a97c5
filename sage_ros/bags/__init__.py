"""ROS 2 bags (sqlite3 and MCAP) read and written with `rosbags`, no ROS installation needed.

`reader.open_bag` reads a bag folder or a single .mcap / .db3 file, scanning damaged ones record by
record (`mcap_scan`); `writer.BagWriter` writes them; `messages` builds and decodes sensor_msgs images,
`detections` vision_msgs boxes and std_msgs/String pair names; `dataset_bag` is `sage-ros make-bag`.
"""
