"""The parts of the homework, one row each: the table make_handout.py and grade.py both read.

A part's row says what the tools cannot read from its files: its number, the student's class and file,
its test module and its fixture, its points per function, its references, its own extra files, and the
instructors' modules in tools/ that build its references and catalogue its mistakes (named, never
imported here). Everything else (what is checked, the cases) is the part's declaration in its test file.
tools/make_reference.py, tools/class_mistakes.py and tests/test_fairness.py find every part here.
This file ships inside the built autograder, beside grade.py; never in the students' handout.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    """One part: make_handout.py hands it out and builds its autograder; grade.py grades it."""
    number: int  # Part N: its banner `# Part N:` in a shared solution file, and --parts N
    cls: str  # the student's class, whose solution blocks are this part's
    tests: str  # the students' test module, e.g. "test_diffusion"; its FUNCTIONS name the functions it checks
    points: dict[str, int]  # function -> points, in the order Gradescope shows them (the FUNCTIONS, all of them)
    public: str  # the public reference (shipped with the handout), e.g. "data/reference/public.pt"
    hidden: str  # the hidden reference's file name in tools/reference/ (autograder only)
    source: str = "diffusion.py"  # the student's file holding the class
    fixture: str = "diffusion_class"  # the test module's fixture holding the class under test
    extra: tuple[str, ...] = ()  # other files only this part uses: left out of a handout before it
    # The module in tools/ whose RECIPE builds the references (`python tools/make_reference.py --part N`), e.g.
    # "make_energy_reference"; "" where they are made some other way.
    recipe: str = ""
    # The module of its mistakes catalogue (tools/mistakes_format.py), e.g. "tools.energy_mistakes": its
    # mistakes and alternatives are what the fairness tests run, its message mistakes what class reports name.
    mistakes: str = ""

    @property
    def title(self) -> str:
        """Prefix of the part's Gradescope entries ("Part 2: sample"); Part 1's entries are the plain names."""
        return "" if self.number == 1 else f"Part {self.number}"

    @property
    def test_file(self) -> str:
        return f"{self.tests}.py"

    @property
    def student_files(self) -> tuple[str, ...]:
        return (self.source,)

    @property
    def module(self) -> str:
        return self.source.removesuffix(".py")

    @property
    def classes(self) -> dict[str, tuple[str, str]]:
        """Test fixture name -> (student module, class name)."""
        return {self.fixture: (self.module, self.cls)}

    @property
    def reference(self) -> str:
        """The hidden reference (grade.py's name for it); a path replaces it with --reference."""
        return self.hidden


PARTS = {
    "diffusion": Part(
        1, "GaussianDiffusion", "test_diffusion",
        points={"q_sample": 15, "p_losses": 15, "forward": 15, "p_sample": 25, "p_sample_loop": 15, "sample": 15},
        public="data/reference/public.pt", hidden="hidden.pt", recipe="make_reference", mistakes="tools.mistakes"),
    "conditional": Part(
        2, "ConditionalGaussianDiffusion", "test_conditional",
        points={"drop_labels": 10, "p_losses": 10, "forward": 10, "guided_noise": 15, "threshold": 15, "p_sample": 15,
                "p_sample_loop": 10, "sample": 15},
        public="data/reference/public_conditional.pt", hidden="hidden_conditional.pt", extra=("conditional_trainer.py",),
        recipe="make_reference_conditional", mistakes="tools.mistakes_conditional"),
    "energy": Part(
        3, "EnergyModel", "test_energy",
        points={"langevin_step": 25, "langevin_sample": 10, "loss": 20, "sample_buffer": 15, "update_buffer": 10,
                "forward": 10, "sample": 10},
        public="data/reference/public_energy.pt", hidden="hidden_energy.pt", source="energy.py",
        fixture="model_class", extra=("energy_trainer.py",), recipe="make_energy_reference",
        mistakes="tools.energy_mistakes"),
}
