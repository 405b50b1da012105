"""anyseg_ros: the ROS 2 side of AnySeg.

Message conversions, the anymodal synchroniser and the segmentation node. Importing this
package does not import rclpy; the modules that need it import it themselves, so the parts
that need no ROS (the synchroniser) can be used and tested without a ROS install.
"""
