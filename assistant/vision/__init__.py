"""The patch-sequence transformer: model, training, evaluation."""

# The release recipe finds the content box at most this many pixels on the longer side
# (``PreprocessConfig.crop_work_side``): a slice stored at 2x or 0.75x then gets about the
# box it gets as fetched (11 and 34 of 1,000 training images off by more than 4% of a
# side, against 119 and 82 at full resolution).
CROP_WORK_SIDE = 160

# The release recipe starts half of each training image's augmented views from one of
# this many re-stored copies of it (``restore.py``: JPEG, resampled), so the verdict moves
# less with how a slice was stored.
RESTORED_COPIES = 4

# The release recipe does not low-pass filter the crop before shrinking it to the model
# input (``PreprocessConfig.antialias``, ``imaging.preprocess.antialias_filter``): a
# candidate at 0.8 moved fewer labels with the stored size but changed one image's scope
# with it (README, "A low-pass filter before the resize"), so it was not shipped.
ANTIALIAS = 0.0
