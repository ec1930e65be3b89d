"""The one evaluation protocol: metrics with 95% intervals, paired comparisons that name a winner
only when the difference is significant, and which items a model was fitted or selected on."""
