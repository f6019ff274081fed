"""Classification (分流): decides category and urgency of each reported incident."""
