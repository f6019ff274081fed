"""Intake (上报): grid workers blow the whistle; reports are stored and announced durably."""
