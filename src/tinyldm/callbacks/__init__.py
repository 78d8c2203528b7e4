"""Lightning callbacks specific to tinyldm."""
