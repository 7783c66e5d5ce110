"""Learners a team might bring, good and broken, for the tests of the learner contract."""
