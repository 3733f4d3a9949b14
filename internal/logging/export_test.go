package logging

// HumanIntervalForTest exposes humanInterval to the external tests.
var HumanIntervalForTest = humanInterval
