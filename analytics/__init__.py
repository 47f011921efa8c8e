"""The read side: daily active users, top events and retention over the lake and hot rows."""
