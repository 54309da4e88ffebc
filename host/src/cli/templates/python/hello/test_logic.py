import unittest

import logic


class RequestTest(unittest.TestCase):
    def test_the_prompt_is_capped(self):
        self.assertEqual(len(logic.request_for("x" * 10000)["prompt"]), 4000)


if __name__ == "__main__":
    unittest.main()
