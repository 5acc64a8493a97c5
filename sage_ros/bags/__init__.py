"""ROS 2 bags (sqlite3 and MCAP) read and written with `rosbags`, no ROS installation needed.

`open_bag` reads a bag folder or a single .mcap / .db3 file; when `rosbags` cannot open it
(a recorder killed before writing the MCAP summary, a truncated file), it falls back to a
record-by-record scan that keeps every complete message and reports what was lost.
`BagWriter` writes sensor_msgs/Image streams (and, with `sage_ros.bags.detections`, which registers
vision_msgs on import, Detection2DArray boxes and std_msgs/String pair names).
"""

from sage_ros.bags.detections import (
    BOXES_TOPIC,
    DETECTIONS_TYPE,
    PAIR_NAME_TOPIC,
    DecodedBox,
    DecodedDetections,
    decode_detections,
    detections_message,
)
from sage_ros.bags.messages import (
    COMPRESSED_TYPE,
    IMAGE_TYPE,
    TYPESTORE,
    compressed_image_message,
    decode_any,
    image_message,
    stamp_of,
    stamp_to_ns,
)
from sage_ros.bags.reader import BagMessage, BagProblem, BagReadError, BagSource, open_bag
from sage_ros.bags.writer import STORAGES, BagWriter

__all__ = [
    "BOXES_TOPIC",
    "DETECTIONS_TYPE",
    "PAIR_NAME_TOPIC",
    "DecodedBox",
    "DecodedDetections",
    "decode_detections",
    "detections_message",
    "COMPRESSED_TYPE",
    "IMAGE_TYPE",
    "STORAGES",
    "TYPESTORE",
    "BagMessage",
    "BagProblem",
    "BagReadError",
    "BagSource",
    "BagWriter",
    "compressed_image_message",
    "decode_any",
    "image_message",
    "open_bag",
    "stamp_of",
    "stamp_to_ns",
]
