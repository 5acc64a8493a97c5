"""Image handling without ROS or torch: colour math, message decoding, thermal normalisation, registration."""
