#!/usr/bin/env python3
"""Writes the workbook fixtures of tests/fixtures/workbooks with the spreadsheet libraries users'
tools are built on (openpyxl for xlsx, xlwt for the older xls), each beside a CSV twin holding the
same table as the cycler's CSV export would: the tests read both and expect the same rows.

The rows are the first CC discharge, rest, CC-CV charge and rest of data/pybamm-chen2020's cell
chen2020-11-00-cccv, every third row (400 rows), written as
- arbin.xlsx: MITS Pro's layout: a Global_Info sheet, the record over two sheets that each repeat
  its header (Channel_1-008_1, Channel_1-008_2), Date_Time as Excel date-times, and a per-cycle
  Statistics sheet that names the same columns and must not be read as the record;
- arbin.xls: the same record on one sheet (Excel 97-2003, as older MITS versions export);
- arbin.ods: the same again as an OpenDocument spreadsheet (odfpy, as LibreOffice saves one);
- neware.xlsx: BTS's layout: test, cycle and step sheets, then `record` with `Total Time` as Excel
  durations ([h]:mm:ss.000), the current unsigned and signed by `Step Type`;
- landt.xlsx: LANDdt's layout: Cycle-Tab, then Record-Tab (`TestTime/Sec`, `Current/mA` signed,
  `AuxTemp/dC.` as `-` without a sensor, `SysTime` date-times, a nameless column, `Step-State`);
- neware7.xls: BTS 7's layout: Info, Cycle, Statis and Detail sheets, the record in `Detail_1_1_8`
  (`Absolute Time` as Excel date-times, `Relative Time` the step's, `Cur(mA)` signed, `Status`);
- bad.xlsx: arbin.xlsx's two record sheets with the text "n/a" in Voltage(V) at row 57 of the second;
- milliamps.xlsx: arbin.xlsx's two record sheets with one current in mA (×1000) at row 60 of the
  second, for an error found after reading (a 300C peak) to name its sheet and row;
- channels.xlsx: two channels' records (the first 150 rows twice) on sheets of the same header;
- notes.xlsx: a sheet of lab notes and no time series.

usage: workbook_fixtures.py OUT_DIR      (needs: pip install openpyxl xlwt odfpy pyarrow)
"""
import csv
import datetime as dt
import os
import sys

import openpyxl
import pyarrow.parquet as pq
import xlwt
from odf.opendocument import OpenDocumentSpreadsheet
from odf.table import Table, TableCell, TableRow
from odf.text import P

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
root = os.path.join(os.path.dirname(__file__), "..")
cell = pq.read_table(os.path.join(root, "data/pybamm-chen2020/chen2020-11-00-cccv.parquet")).to_pydict()
rows = range(0, 1200, 3)
start = dt.datetime(2026, 3, 2, 9, 30, 0)

# Arbin: + = charge, capacities counted per cycle, steps 1-based.
arbin_header = ["Data_Point", "Test_Time(s)", "Date_Time", "Step_Time(s)", "Step_Index", "Cycle_Index", "Current(A)",
                "Voltage(V)", "Charge_Capacity(Ah)", "Discharge_Capacity(Ah)", "Aux_Temperature_1(C)"]
arbin, charged, discharged, step_start, previous = [], 0.0, 0.0, 0.0, None
for n, i in enumerate(rows):
    t, current, step = cell["test_time"][i], round(float(cell["current"][i]), 4), cell["step_index"][i] + 1
    if previous is not None:
        dq = current * (t - previous[0]) / 3600
        charged, discharged = charged + max(dq, 0), discharged + max(-dq, 0)
        if step != previous[1]:
            step_start = t
    previous = (t, step)
    arbin.append([n + 1, round(t, 3), start + dt.timedelta(seconds=round(t, 3)), round(t - step_start, 3), step, 1, current,
                  round(float(cell["voltage"][i]), 5), round(charged, 6), round(discharged, 6), round(float(cell["temperature"][i]), 3)])


def write_csv(name, header, table):
    with open(os.path.join(out, name), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for row in table:
            w.writerow([x.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if isinstance(x, dt.datetime) else x for x in row])


def elapsed(d):
    ms = round(d.total_seconds() * 1000)
    return f"{ms // 3_600_000}:{ms // 60_000 % 60:02}:{ms // 1000 % 60:02}.{ms % 1000:03}"


def excel_serial(t):
    """Days since Excel's epoch, to the microsecond: xlwt writes a datetime to the whole second."""
    return (t - dt.datetime(1899, 12, 30)).total_seconds() / 86400


def append(sheet, header, table):
    sheet.append(header)
    for row in table:
        sheet.append(row)
    for c in sheet[1]:
        if c.value in ("Date_Time", "SysTime"):
            for (cell_,) in sheet.iter_rows(min_row=2, min_col=c.column, max_col=c.column):
                cell_.number_format = "yyyy-mm-dd hh:mm:ss.000"


book = openpyxl.Workbook()
info = book.active
info.title = "Global_Info"
for row in [["TEST REPORT"], ["Channel", 8, "Schedule File Name", "CCCV_C3.sdx"], ["Start DateTime", start]]:
    info.append(row)
append(book.create_sheet("Channel_1-008_1"), arbin_header, arbin[:200])
append(book.create_sheet("Channel_1-008_2"), arbin_header, arbin[200:])
stats = book.create_sheet("Statistics_1-008")
stats.append(["Test_Time(s)", "Date_Time", "Step_Time(s)", "Cycle_Index", "Current(A)", "Voltage(V)", "Charge_Capacity(Ah)", "Discharge_Capacity(Ah)"])
stats.append([arbin[-1][1], arbin[-1][2], arbin[-1][3], 1, arbin[-1][6], arbin[-1][7], arbin[-1][8], arbin[-1][9]])
book.save(os.path.join(out, "arbin.xlsx"))
write_csv("arbin.csv", arbin_header, arbin)

def xls_sheet(book, name, header, table):
    """A table on an xls sheet, date-times as Excel serials formatted as dates."""
    sheet = book.add_sheet(name)
    date_style = xlwt.easyxf(num_format_str="yyyy-mm-dd hh:mm:ss.000")
    for c, title in enumerate(header):
        sheet.write(0, c, title)
    for r, row in enumerate(table, start=1):
        for c, x in enumerate(row):
            sheet.write(r, c, excel_serial(x), date_style) if isinstance(x, dt.datetime) else sheet.write(r, c, x)


old = xlwt.Workbook()
xls_sheet(old, "Channel_1-008", arbin_header, arbin)
old.save(os.path.join(out, "arbin.xls"))

ods = OpenDocumentSpreadsheet()
table = Table(name="Channel_1-008")
for row in [arbin_header] + arbin:
    cells = TableRow()
    for x in row:
        if isinstance(x, dt.datetime):
            cell_ = TableCell(valuetype="date", datevalue=x.isoformat())
        elif isinstance(x, (int, float)):
            cell_ = TableCell(valuetype="float", value=repr(x))
        else:
            cell_ = TableCell(valuetype="string")
        cell_.addElement(P(text=str(x)))
        cells.addElement(cell_)
    table.addElement(cells)
ods.spreadsheet.addElement(table)
ods.save(os.path.join(out, "arbin.ods"))

# Neware BTS: current unsigned, Step Type signs it; times as durations.
kinds = {1: "CC DChg", 2: "Rest", 3: "CC Chg", 4: "CV Chg", 5: "Rest"}
neware_header = ["DataPoint", "Cycle Index", "Step Index", "Step Type", "Time", "Total Time", "Current(A)", "Voltage(V)", "Capacity(Ah)", "T1(°C)"]
neware = [[r[0], 1, r[4], kinds[r[4]], dt.timedelta(seconds=r[3]), dt.timedelta(seconds=r[1]), abs(r[6]), r[7], r[8] + r[9], r[10]] for r in arbin]
book = openpyxl.Workbook()
book.active.title = "test"
book["test"].append(["Barcode", "Start Time", "Active material"])
book["test"].append(["NW-0001", start, 0])
book.create_sheet("cycle").append(["Cycle Index", "Chg. Cap.(Ah)", "DChg. Cap.(Ah)"])
book["cycle"].append([1, arbin[-1][8], arbin[-1][9]])
step_sheet = book.create_sheet("step")
step_sheet.append(["Cycle Index", "Step Index", "Step Type", "Step Time", "Capacity(Ah)"])
for s in sorted(kinds):
    last = [r for r in neware if r[2] == s][-1]
    step_sheet.append([1, s, kinds[s], last[4], last[8]])
record = book.create_sheet("record")
record.append(neware_header)
for row in neware:
    record.append(row)
for (a, b) in record.iter_rows(min_row=2, min_col=5, max_col=6):
    a.number_format = b.number_format = "[h]:mm:ss.000"
book.save(os.path.join(out, "neware.xlsx"))



write_csv("neware.csv", neware_header, [r[:4] + [elapsed(r[4]), elapsed(r[5])] + r[6:] for r in neware])

# Landt LANDdt: mA and mAh, signed current, a step-state code, no temperature sensor.
states = {1: "RateD", 2: "R", 3: "RateC", 4: "RateC", 5: "R"}
landt_header = ["Record", "TestTime/Sec", "StepTime/Sec", "Current/mA", "Capacity/mAh", "SpeCap/mAh/g", "SOC|DOD/%", "Voltage/V",
                "Energy/mWh", "SpeEnergy/Wh/kg", "AuxTemp/dC.", "AuxVolt/V", "SysTime", None, "Cycle-Index", "Step-Index", "Step-State"]
landt = [[r[0], r[1], r[3], round(r[6] * 1000, 4), round((r[8] + r[9]) * 1000, 3), 0, 0, r[7], 0, 0, "-", "-", r[2], None, 1, r[4], states[r[4]]]
         for r in arbin]
book = openpyxl.Workbook()
book.active.title = "Cycle-Tab"
book.active.append(["Cycle", "CapC/mAh", "CapD/mAh", "Efficiency/%"])
book.active.append([1, arbin[-1][8] * 1000, arbin[-1][9] * 1000, 100 * arbin[-1][9] / arbin[-1][8]])
append(book.create_sheet("Record-Tab"), landt_header, landt)
book.save(os.path.join(out, "landt.xlsx"))
write_csv("landt.csv", ["" if h is None else h for h in landt_header], landt)

# Neware BTS 7 (xls): the record in the Detail sheet, its time an absolute date-time.
status = {1: "CC_DChg", 2: "Rest", 3: "CC_Chg", 4: "CV_Chg", 5: "Rest"}
nw7_header = ["Record Index", "Status", "JumpTo", "Cycle", "Step", "Cur(mA)", "Voltage(V)", "CapaCity(mAh)", "Energy(mWh)",
              "Relative Time(h:min:s.ms)", "Absolute Time"]
nw7 = [[r[0], status[r[4]], r[4], 1, r[4], round(r[6] * 1000, 4), r[7], round((r[8] + r[9]) * 1000, 3), 0, elapsed(dt.timedelta(seconds=r[3])), r[2]]
       for r in arbin]
old = xlwt.Workbook()
old.add_sheet("Info").write(0, 0, "Testing Information")
old.add_sheet("Cycle_1_1_8").write(0, 0, "Channel")
old.add_sheet("Statis_1_1_8").write(0, 0, "Channel")
xls_sheet(old, "Detail_1_1_8", nw7_header, nw7)
old.save(os.path.join(out, "neware7.xls"))
write_csv("neware7.csv", nw7_header, nw7)

book = openpyxl.Workbook()
book.active.title = "Channel_1-008_1"
bad = [list(r) for r in arbin]
bad[200 + 55][7] = "n/a"  # row 57 of the second sheet, whose header is its row 1
append(book.active, arbin_header, bad[:200])
append(book.create_sheet("Channel_1-008_2"), arbin_header, bad[200:])
book.save(os.path.join(out, "bad.xlsx"))

book = openpyxl.Workbook()
book.active.title = "Channel_1-008_1"
milliamps = [list(r) for r in arbin]
milliamps[200 + 58][6] *= 1000  # row 60 of the second sheet
append(book.active, arbin_header, milliamps[:200])
append(book.create_sheet("Channel_1-008_2"), arbin_header, milliamps[200:])
book.save(os.path.join(out, "milliamps.xlsx"))

book = openpyxl.Workbook()
book.active.title = "Channel_1-001"
append(book.active, arbin_header, arbin[:150])
append(book.create_sheet("Channel_1-002"), arbin_header, arbin[:150])
book.save(os.path.join(out, "channels.xlsx"))

book = openpyxl.Workbook()
book.active.title = "Notes"
for row in [["Cell", "Operator", "Remark"], ["NW-0001", "A. B.", "tab welded twice"], ["NW-0002", "A. B.", "swelling after formation"]]:
    book.active.append(row)
book.save(os.path.join(out, "notes.xlsx"))
print(f"wrote {len(arbin)} rows as arbin.xlsx, arbin.xls, arbin.ods, neware.xlsx, landt.xlsx, neware7.xls, bad.xlsx and their CSV twins, milliamps.xlsx, channels.xlsx and notes.xlsx in {out}")
