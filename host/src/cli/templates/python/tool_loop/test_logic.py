import unittest

import logic


class ToolTest(unittest.TestCase):
    def test_add_adds_and_bad_input_is_an_answer(self):
        self.assertEqual(logic.run_tool("add", {"a": 19, "b": 23}), '{"sum": 42}')
        self.assertIn("bad input", logic.run_tool("add", {}))
        self.assertIn("no tool", logic.run_tool("divide", {}))


if __name__ == "__main__":
    unittest.main()
