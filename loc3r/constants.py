"""Strings every layer agrees on: the special tokens of the prompt and the pseudo-situation. A leaf module: the
data readers, the synthetic rooms and the model import it, it imports nothing of loc3r."""

VIDEO_TOKEN = "<video>"  # placeholder run of the video block (transformers' LlavaOnevision convention)
POS_TOKEN = "<Pos>"  # situation token whose final state feeds the position head
ORI_TOKEN = "<Ori>"  # situation token whose final state feeds the orientation head
END_OF_TURN = "<|im_end|>"  # ChatML end of turn: ends every answer and stops generation
IGNORE_INDEX = -100  # label of tokens without LM loss (prompt, video, padding)
NO_SITUATION = "I am standing in the room."  # pseudo-situation of questions without one (paper, Sec. 4.1)
