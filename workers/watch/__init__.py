"""The online mode (``tsmindex watch``): a stream's frames through ``OnlineTSM``, its running label,
and its moments into the index."""
