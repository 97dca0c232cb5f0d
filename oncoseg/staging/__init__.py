"""StagingCNN: T2 vs T3 rectal cancer from the T2w volume (paper 002)."""
